"""Who may do what: API keys (``keys``), authentication (``auth``), watch tokens
(``tokens``), JWT principals (``jwts``), rate limits (``ratelimit``), the data dir's
secret (``secret``) and the bootstrap admin key (``adminkey``)."""
