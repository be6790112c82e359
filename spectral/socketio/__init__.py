"""Socket.IO at ``/socket.io/`` for the seeds' jobs clients (docs/api.md, "Socket.IO
(the seeds' jobs system)"): Engine.IO 4 and Socket.IO 5 codecs (pure), sessions over
long-polling and WebSocket, the main namespace, and the jobs feed."""
