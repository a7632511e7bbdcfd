/* Orgdir portal: the one behaviour htmx does not cover. A tree branch's disclosure button opens and
   closes its list of sub-units (htmx loads that list on the first click). */
function orgdirToggle(button) {
  var open = button.getAttribute("aria-expanded") !== "true";
  button.setAttribute("aria-expanded", String(open));
  document.getElementById(button.getAttribute("aria-controls")).hidden = !open;
}
