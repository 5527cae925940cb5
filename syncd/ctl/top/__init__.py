"""`syncctl top`: a pure screen model and the curses loop that drives it."""
