"""I/O plumbing shared by seller, buyer and facilitator: the keep-alive HTTP/1.1 client and the loop thread."""
