"""The media gateway: Twilio webhooks and Media Streams bridged to the Grok realtime API."""
