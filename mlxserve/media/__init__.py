"""What a request carries besides text: its images, read, fetched when the server allows it, and
decoded."""
