"""The read model's parts, one per job (perpline.api.readmodel composes them): account views and their
feed, book mirrors, the matcher's word per order, command results, marks and funding rounds, wakeups.

Each part holds its own state and its own lock: the consumer thread writes, request handlers and the
stream hub read, and no reader of one part waits on a writer of another."""
