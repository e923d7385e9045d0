"""Faithful local stand-ins for Twilio and xAI that speak their real protocols over real sockets."""
