"""Reading files and cutting them into chunks. Nothing here knows about models or the index format."""
