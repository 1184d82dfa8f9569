"""instanode: the API's library code (Chalice packages this folder with every Lambda)."""
