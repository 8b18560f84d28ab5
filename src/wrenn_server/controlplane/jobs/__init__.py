"""Work that runs without a request, above the services: the reconciler, the build workers and
runner, the periodic steps (stats sampling, purges), the loops that run them and the leadership
lease that lets one process of many run them."""
