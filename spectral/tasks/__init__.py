"""Tasks: the pure state machine (``state``), the Task object kind on the runtime
(``actor``), and the bus its committed events go out on (``events``)."""
