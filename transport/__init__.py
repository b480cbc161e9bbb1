"""What both ends of the fleet's broker links share, agent and server alike: reconnect backoff
and socket options. Pure and small, so the agent carries no server code and the server none of
the agent's."""
