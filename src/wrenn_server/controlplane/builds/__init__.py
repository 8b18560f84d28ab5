"""Template builds: recipes, archives, the queue and the workers that run them."""
