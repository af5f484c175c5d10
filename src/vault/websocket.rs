//! WebSocket frames through the vault (RFC 6455 §5): after an upgrade the vault relays frames, not
//! bytes, so the credential rules of requests and responses hold for messages too.
//!
//! - **Sandbox → upstream.** Stubs bound to the host are swapped for their real values in every data
//!   and control frame. A stub of a credential not bound to the host ends the connection before the
//!   frame that carries it is sent on (close 1008 to both sides; the caller records the block).
//! - **Upstream → sandbox.** Real values (and the Basic credentials the handshake sent) are scrubbed
//!   to their stubs in every frame.
//! - **No compression.** `permessage-deflate` would hide payloads from both: the vault never offers an
//!   extension upstream ([`strip_extensions`]), and a frame with a reserved bit set (what a
//!   compressed frame looks like) ends the connection.
//!
//! Constant memory: a data frame's payload streams through [`Substitutions::push`] in chunks of at
//! most [`CHUNK`] bytes, each sent on as a fragment of the same message (fragmentation carries no
//! meaning for data frames), so a needle split across frames or chunks is still found and a frame of
//! any size needs no buffer of its size. Control frames (at most 125 bytes) are rewritten whole.
//! Frames the sandbox sends upstream are masked afresh, as a client's must be.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::rewrite::Substitutions;

/// Largest payload piece read (and so sent as one fragment) at a time.
pub const CHUNK: usize = 16 * 1024;
/// Largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL: usize = 125;

const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
/// Close code: policy violation.
pub const POLICY_VIOLATION: u16 = 1008;
/// Close code: protocol error.
pub const PROTOCOL_ERROR: u16 = 1002;

/// Why a relay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Not a WebSocket frame stream lap can read (including compressed frames).
    #[error("{0}")]
    Protocol(String),
    /// A stub of a credential not bound to this host.
    #[error("a frame carries a credential's stub that is not bound to this host")]
    Stray,
}

/// How one direction is rewritten.
pub struct Direction<'a> {
    /// Applied to every payload.
    pub rewrite: &'a Substitutions,
    /// Stubs that must not pass (sandbox → upstream only).
    pub stray: Option<&'a Substitutions>,
    /// Whether frames are sent masked (sandbox → upstream).
    pub mask: bool,
}

/// Removes the extension offer from an upgrade request, so no extension (compression) is agreed.
pub fn strip_extensions(headers: &mut hyper::HeaderMap) {
    headers.remove(hyper::header::SEC_WEBSOCKET_EXTENSIONS);
}

struct Head {
    fin: bool,
    opcode: u8,
    len: u64,
    mask: Option<[u8; 4]>,
}

/// Reads one frame head; `None` at a clean end of stream (between frames).
async fn read_head<R: AsyncRead + Unpin>(from: &mut R) -> Result<Option<Head>, RelayError> {
    let mut first = [0u8; 2];
    match from.read_exact(&mut first[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    from.read_exact(&mut first[1..]).await?;
    if first[0] & 0x70 != 0 {
        return Err(RelayError::Protocol(
            "a frame has a reserved bit set (a compressed or extended frame), which the vault cannot read".into(),
        ));
    }
    let len = match first[1] & 0x7f {
        126 => u64::from(from.read_u16().await?),
        127 => from.read_u64().await?,
        n => u64::from(n),
    };
    let mask = if first[1] & 0x80 != 0 {
        let mut key = [0u8; 4];
        from.read_exact(&mut key).await?;
        Some(key)
    } else {
        None
    };
    Ok(Some(Head {
        fin: first[0] & 0x80 != 0,
        opcode: first[0] & 0x0f,
        len,
        mask,
    }))
}

/// Writes one frame.
async fn write_frame<W: AsyncWrite + Unpin>(
    to: &mut W,
    fin: bool,
    opcode: u8,
    payload: &[u8],
    mask: bool,
) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(if fin { 0x80 } else { 0 } | opcode);
    let mask_bit = if mask { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => frame.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if mask {
        let key = mask_key()?;
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        frame.extend_from_slice(payload);
    }
    to.write_all(&frame).await?;
    to.flush().await
}

fn mask_key() -> std::io::Result<[u8; 4]> {
    use ring::rand::SecureRandom;
    let mut key = [0u8; 4];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| std::io::Error::other("no randomness for a WebSocket mask"))?;
    Ok(key)
}

/// Sends a close frame with `code` and `reason`.
pub async fn close<W: AsyncWrite + Unpin>(to: &mut W, code: u16, reason: &str, mask: bool) -> std::io::Result<()> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend(reason.bytes().take(MAX_CONTROL - 2));
    write_frame(to, true, CLOSE, &payload, mask).await
}

/// Relays frames from `from` to `to`, rewritten as `direction` says, until `from` ends. Returns
/// early with the reason on a stray stub or a stream that is not readable WebSocket framing.
pub async fn relay<R, W>(from: &mut R, to: &mut W, direction: &Direction<'_>) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // The data message being relayed: its opcode until its first fragment went out.
    let mut pending_opcode: Option<u8> = None;
    let mut in_message = false;
    let (mut carry, mut stray_carry) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; CHUNK];
    let (mut out, mut scratch) = (Vec::new(), Vec::new());
    while let Some(head) = read_head(from).await? {
        if head.opcode >= 0x8 {
            // A control frame, possibly between the fragments of a message.
            let len = usize::try_from(head.len).unwrap_or(usize::MAX);
            if len > MAX_CONTROL || !head.fin {
                return Err(RelayError::Protocol("a control frame is fragmented or too long".into()));
            }
            let mut payload = vec![0u8; len];
            from.read_exact(&mut payload).await?;
            unmask(&mut payload, head.mask, 0);
            if direction.stray.is_some_and(|stray| stray.finds_any(&payload)) {
                return Err(RelayError::Stray);
            }
            let mut payload = direction.rewrite.replace_all(&payload).into_owned();
            payload.truncate(MAX_CONTROL);
            write_frame(to, true, head.opcode, &payload, direction.mask).await?;
            continue;
        }
        match (head.opcode, in_message) {
            (CONTINUATION, false) => return Err(RelayError::Protocol("a continuation frame starts no message".into())),
            (CONTINUATION, true) => {}
            (_, true) => return Err(RelayError::Protocol("a new message starts inside another".into())),
            (opcode, false) => {
                pending_opcode = Some(opcode);
                in_message = true;
            }
        }
        let mut left = head.len;
        let mut offset = 0usize;
        while left > 0 {
            let n = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
            from.read_exact(&mut buf[..n]).await?;
            unmask(&mut buf[..n], head.mask, offset);
            offset += n;
            left -= n as u64;
            // What the stray check has decided is free of stray stubs goes on to the rewrite; a
            // tail that could begin a stray stub stays in `stray_carry` until the next bytes decide.
            let decided: &[u8] = match direction.stray {
                Some(stray) => {
                    scratch.clear();
                    stray.push(&mut stray_carry, &buf[..n], &mut scratch);
                    if !stray.hits().is_empty() {
                        return Err(RelayError::Stray);
                    }
                    &scratch
                }
                None => &buf[..n],
            };
            out.clear();
            direction.rewrite.push(&mut carry, decided, &mut out);
            if !out.is_empty() {
                let opcode = pending_opcode.take().unwrap_or(CONTINUATION);
                write_frame(to, false, opcode, &out, direction.mask).await?;
            }
        }
        if head.fin {
            out.clear();
            if let Some(stray) = direction.stray {
                scratch.clear();
                stray.finish(&mut stray_carry, &mut scratch);
                if !stray.hits().is_empty() {
                    return Err(RelayError::Stray);
                }
                direction.rewrite.push(&mut carry, &scratch, &mut out);
            }
            direction.rewrite.finish(&mut carry, &mut out);
            let opcode = pending_opcode.take().unwrap_or(CONTINUATION);
            write_frame(to, true, opcode, &out, direction.mask).await?;
            in_message = false;
        }
    }
    Ok(())
}

/// [`relay`] until it ends or `stop` is cancelled. When the relay ends cleanly, `to` is shut down (the
/// peer sees the end); when it fails, `stop` is cancelled, so the other direction stops too and
/// leaves its writer open for the close frames.
pub async fn relay_until<R, W>(
    from: &mut R,
    to: &mut W,
    direction: &Direction<'_>,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let result = tokio::select! {
        // Stopped by the other direction, which says why to both sides.
        _ = stop.cancelled() => return Ok(()),
        result = relay(from, &mut *to, direction) => result,
    };
    match &result {
        Ok(()) => {
            let _ = to.shutdown().await;
        }
        Err(_) => stop.cancel(),
    }
    result
}

/// Unmasks `data`, which starts `offset` bytes into its frame's payload.
fn unmask(data: &mut [u8], mask: Option<[u8; 4]>, offset: usize) {
    if let Some(key) = mask {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte ^= key[(offset + i) % 4];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames `payloads` (text, masked or not) into one byte stream: the first fragment with
    /// `opcode`, the rest continuations, the last with FIN.
    fn message(opcode: u8, payloads: &[&[u8]], mask: bool) -> Vec<u8> {
        let mut bytes = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            for (i, payload) in payloads.iter().enumerate() {
                let op = if i == 0 { opcode } else { CONTINUATION };
                write_frame(&mut bytes, i + 1 == payloads.len(), op, payload, mask)
                    .await
                    .unwrap();
            }
        });
        bytes
    }

    /// A message as it came out: its opcode and reassembled payload.
    type Message = (u8, Vec<u8>);

    /// Relays `input` and returns each message that came out.
    fn relayed(input: Vec<u8>, direction: &Direction<'_>) -> (Result<(), RelayError>, Vec<Message>) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut from = std::io::Cursor::new(input);
            let mut to = Vec::new();
            let result = relay(&mut from, &mut to, direction).await;
            let mut messages = Vec::new();
            let mut stream = std::io::Cursor::new(to);
            let mut current: Option<Message> = None;
            while let Some(head) = read_head(&mut stream).await.unwrap() {
                assert_eq!(head.mask.is_some(), direction.mask, "masking");
                let mut payload = vec![0u8; head.len as usize];
                stream.read_exact(&mut payload).await.unwrap();
                unmask(&mut payload, head.mask, 0);
                if head.opcode >= 0x8 {
                    messages.push((head.opcode, payload));
                    continue;
                }
                let entry = current.get_or_insert_with(|| (head.opcode, Vec::new()));
                entry.1.extend(payload);
                if head.fin {
                    messages.push(current.take().unwrap());
                }
            }
            (result, messages)
        })
    }

    #[test]
    fn a_bound_stub_is_swapped_even_split_across_fragments_and_the_frames_go_out_masked() {
        let swap = Substitutions::new([("stub_token_1234", "real-value-abcdefgh")]);
        let input = message(0x1, &[b"auth stub_tok", b"en_1234 done"], true);
        let direction = Direction {
            rewrite: &swap,
            stray: None,
            mask: true,
        };
        let (result, messages) = relayed(input, &direction);
        result.unwrap();
        assert_eq!(messages, vec![(0x1, b"auth real-value-abcdefgh done".to_vec())]);
    }

    #[test]
    fn real_values_are_scrubbed_from_big_binary_frames_and_control_frames() {
        let scrub = Substitutions::new([("real-value-abcdefgh", "stub_token_1234")]);
        let mut big = vec![b'x'; 3 * CHUNK];
        // Across a chunk boundary.
        big[CHUNK - 5..CHUNK + 14].copy_from_slice(b"real-value-abcdefgh");
        let mut input = message(0x2, &[&big], false);
        input.extend(message(0x9, &[b"ping real-value-abcdefgh"], false));
        let direction = Direction {
            rewrite: &scrub,
            stray: None,
            mask: false,
        };
        let (result, messages) = relayed(input, &direction);
        result.unwrap();
        assert_eq!(messages.len(), 2);
        let (opcode, payload) = &messages[0];
        assert_eq!(*opcode, 0x2);
        assert_eq!(payload.len(), 3 * CHUNK - 4);
        assert!(!payload.windows(10).any(|w| w == b"real-value"));
        assert_eq!(&payload[CHUNK - 5..CHUNK + 10], b"stub_token_1234");
        assert_eq!(messages[1], (0x9, b"ping stub_token_1234".to_vec()));
    }

    #[test]
    fn a_stray_stub_stops_the_relay_before_its_frame_goes_on() {
        let swap = Substitutions::new([("stub_bound_1", "real-1")]);
        let stray = Substitutions::new([("stub_other_2", "stub_other_2")]);
        let mut input = message(0x1, &[b"fine stub_bound_1"], true);
        input.extend(message(0x1, &[b"leak stub_oth", b"er_2"], true));
        let direction = Direction {
            rewrite: &swap,
            stray: Some(&stray),
            mask: true,
        };
        let (result, messages) = relayed(input, &direction);
        assert!(matches!(result, Err(RelayError::Stray)), "{result:?}");
        // The first message went on; of the second, nothing that holds the stub.
        assert_eq!(messages[0], (0x1, b"fine real-1".to_vec()));
        assert!(
            messages
                .iter()
                .all(|(_, p)| !p.windows(12).any(|w| w == b"stub_other_2"))
        );
    }

    /// Relays `input` and returns every payload byte that went out, complete message or not.
    fn sent_bytes(input: Vec<u8>, direction: &Direction<'_>) -> (Result<(), RelayError>, Vec<u8>) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut to = Vec::new();
            let result = relay(&mut std::io::Cursor::new(input), &mut to, direction).await;
            let mut sent = Vec::new();
            let mut stream = std::io::Cursor::new(to);
            while let Some(head) = read_head(&mut stream).await.unwrap() {
                let mut payload = vec![0u8; head.len as usize];
                stream.read_exact(&mut payload).await.unwrap();
                unmask(&mut payload, head.mask, 0);
                sent.extend(payload);
            }
            (result, sent)
        })
    }

    #[test]
    fn not_even_the_first_bytes_of_a_stray_stub_go_upstream_before_the_block() {
        // The bound stub shares the stray one's prefix, so the rewrite alone would hold back `stub_`
        // and nothing more; the fragment ends at `stub_other_` and must wait for the next one.
        let swap = Substitutions::new([("stub_bound_1", "real-1")]);
        // Hits are counted per set: a fresh stray set per message.
        let stray = || Substitutions::new([("stub_other_2", "stub_other_2")]);
        for fragments in [
            &[&b"leak stub_other_"[..], b"2 tail"][..],
            &[b"leak s", b"tub_o", b"ther", b"_2"],
            &[b"stub_other", b"_2"],
        ] {
            let stray = stray();
            let direction = Direction {
                rewrite: &swap,
                stray: Some(&stray),
                mask: true,
            };
            let (result, sent) = sent_bytes(message(0x1, fragments, true), &direction);
            assert!(matches!(result, Err(RelayError::Stray)), "{result:?}");
            let sent = String::from_utf8_lossy(&sent);
            assert!(!sent.contains("st"), "a stub prefix went on: {sent:?}");
        }
        // A prefix that turns out not to be a stub goes on whole, in order, when the message ends.
        let stray = stray();
        let direction = Direction {
            rewrite: &swap,
            stray: Some(&stray),
            mask: true,
        };
        let (result, messages) = relayed(
            message(0x1, &[b"a stub_oth", b"ello stub_bound_1 stub_ot"], true),
            &direction,
        );
        result.unwrap();
        assert_eq!(messages, vec![(0x1, b"a stub_othello real-1 stub_ot".to_vec())]);
    }

    #[test]
    fn a_compressed_frame_is_refused() {
        let scrub = Substitutions::new([("a", "b")]);
        // RSV1 set: permessage-deflate.
        let input = vec![0xC1, 0x02, 0x00, 0x00];
        let direction = Direction {
            rewrite: &scrub,
            stray: None,
            mask: false,
        };
        let (result, messages) = relayed(input, &direction);
        assert!(matches!(result, Err(RelayError::Protocol(_))), "{result:?}");
        assert!(messages.is_empty());
    }
}
