"""``multistore serve``: submit configs over HTTP, follow builds live, read cubes back."""
