"""What every way in shares when it takes a caller's files (the studio's uploads, the HTTP APIs' paths and URLs):
checking them by content and copying them under the data folder. Neither the studio nor an API owns it."""
