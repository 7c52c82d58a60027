"""The operator console: a server-rendered web application (Starlette + Jinja2) for people who review
what the model wrote, silence abusive users and watch costs and the pipeline."""
