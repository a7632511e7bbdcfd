"""{{title}}: keeps its own copy of Orgdir's persons and their access rights, from events."""
