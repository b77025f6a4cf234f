"""progress-service: SSE streams of job progress, the browser page and its job API."""
