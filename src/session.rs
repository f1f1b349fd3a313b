// placeholder: replaced by the session implementation
//! One client session. Placeholder until the SSH session logic lands: it logs the
//! connection and closes it.

use std::net::SocketAddr;
use std::rc::Rc;

use crate::shard::ShardContext;

/// Serves one accepted client connection on the current shard.
pub async fn serve(stream: glommio::net::TcpStream, peer: SocketAddr, ctx: Rc<ShardContext>) {
    let session_id = ctx.next_session_id();
    tracing::debug!(session = session_id, %peer, shard = ctx.index, "connection accepted (placeholder session: closing)");
    drop(stream);
}
