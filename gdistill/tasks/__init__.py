"""Tasks applied to a loaded run: sampling (edit and inpaint come later)."""
