"""What the backend and the worker both stand on: settings, project state, queueing, Label Studio, artifacts,
images and task kinds. It imports neither backend/ nor worker/."""
