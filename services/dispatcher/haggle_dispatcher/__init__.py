"""The dispatcher: turns JobStarted into paced, capped, retried Twilio dials."""
