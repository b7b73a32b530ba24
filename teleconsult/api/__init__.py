"""HTTP/WS surface of the server: ``app.create_app``, shared dependencies in ``deps``, routers in ``routes/``."""
