"""Business days: closed on the till, carried to head office on sticks, verified and archived there."""
