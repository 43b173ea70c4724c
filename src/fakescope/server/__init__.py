"""The web service and its page: `create_app` in `app`, served by `fakescope serve`."""
