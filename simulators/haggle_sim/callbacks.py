"""A provider calling Haggle's number back (docs/twilio-inbound.md): the script the Twilio stand-in's inbound
call plays (`TwilioStandin.inbound_call`) and the realtime stand-in's agent follows."""

from __future__ import annotations

from haggle_sim.personas import Persona, ToolCall, Turn


def callback_persona(business: str, phone: str, *, price: int, ms_per_char: int = 12) -> Persona:
    """The business that would not come down on the first call, calling back to accept `price`."""
    return Persona(business=business, phone=phone, ms_per_char=ms_per_char, turns=(
        Turn("provider", f"Hi, this is {business} returning your call about the faucet."),
        Turn("agent", f"Thanks for calling back! Could you do it for ${price}?"),
        Turn("provider", "Yes, we can do that price."),
        Turn("agent", f"Great, ${price} works for us. Thank you, goodbye!",
             tools=(ToolCall("record_quote", {"price": price, "price_type": "flat", "conditions": "",
                                              "agreed": True}),
                    ToolCall("end_call", {"reason": "agreed"}))),
    ))
