/* Orgdir portal: the one behaviour htmx does not cover. A tree branch's disclosure button opens and
   closes its list of sub-units (htmx loads that list on the first click). */
function orgdirToggle(button) {
  var open = button.getAttribute("aria-expanded") !== "true";
  button.setAttribute("aria-expanded", String(open));
  document.getElementById(button.getAttribute("aria-controls")).hidden = !open;
}

/* Past / present / future tabs of a timeline: show the chosen panel, hide the others. */
function orgdirTab(tab) {
  var tabs = tab.parentNode.querySelectorAll("[role=tab]");
  for (var i = 0; i < tabs.length; i++) {
    var on = tabs[i] === tab;
    tabs[i].setAttribute("aria-selected", String(on));
    tabs[i].tabIndex = on ? 0 : -1;
    document.getElementById(tabs[i].getAttribute("aria-controls")).hidden = !on;
  }
}
