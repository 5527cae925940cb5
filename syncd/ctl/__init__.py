"""`syncctl`: the command-line client of the control socket, its rendering and `top`."""
