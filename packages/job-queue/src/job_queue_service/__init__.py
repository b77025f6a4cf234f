"""job-queue-service: accepts job submissions and answers their status."""
