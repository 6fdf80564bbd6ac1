"""The example of docs/testing.md: join the homeserver's room, talk both ways."""

from stubserver.testing import HomeserverUser, PeerFactory


def test_join_and_talk(stubserver_peer: PeerFactory, homeserver_user: HomeserverUser) -> None:
    """A peer joins the homeserver's public room; a message crosses each way,
    with the event ID both sides compute."""
    peer = stubserver_peer()
    room_id = homeserver_user.create_room(preset="public_chat")

    peer.join(room_id, via=[homeserver_user.homeserver.server_name])
    homeserver_user.wait_for_event(room_id, type="m.room.member", sender=peer.user_id())

    sent = peer.send_message(room_id, "hello from stubserver")
    seen = homeserver_user.wait_for_event(room_id, event_id=sent)
    assert seen["content"]["body"] == "hello from stubserver"

    reply = homeserver_user.send_message(room_id, "hello back")
    event = peer.wait_for_event(room_id, event_id=reply)
    assert event.sender == homeserver_user.user_id
    assert event.content["body"] == "hello back"
