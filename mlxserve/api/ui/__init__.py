"""The web page: chat, models and the server's live log, served to browsers at `/`."""
