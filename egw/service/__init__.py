"""The use cases between the web layer and the store: tasks, their reads, the fan-out."""
