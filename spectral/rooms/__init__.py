"""Rooms: the Room object kind (``actor``) and the feed of task events to each
owner's ``user_{owner}`` room (``feed``)."""
