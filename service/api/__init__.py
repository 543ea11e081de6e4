"""HTTP and websocket handlers: validate, call the store, return a Struct."""
