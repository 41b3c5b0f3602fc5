"""Tasks applied to a loaded run: sampling, edit and inpaint, evaluation, export to
diffusers, and the w_eff diagnostic."""
