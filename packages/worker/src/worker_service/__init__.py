"""worker-service: runs jobs taken from the queue and reports their progress."""
