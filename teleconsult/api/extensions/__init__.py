"""App extensions: every module here that defines ``extension = app.Extension(...)`` is plugged into the app.

Keep these modules tiny (import the feature's router/service and wrap it) so that importing them stays cheap.
"""
