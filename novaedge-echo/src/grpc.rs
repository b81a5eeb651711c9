//! The `novaedge.echo.v1.Echo` gRPC service.
//!
//! Every response, successful or not, carries the server's name as
//! `x-echo-server` metadata. Streaming responses end with the same entry in
//! their trailers, so tests can check that a proxy forwards trailers; unary
//! responses cannot, as tonic builds their trailers itself.

use std::sync::Arc;

use futures_util::{
    StreamExt, future,
    stream::{self, BoxStream},
};
use tonic::{Code, Request, Response, Status, Streaming, metadata::MetadataMap};

use crate::{
    GRPC_SERVER_METADATA, Shared,
    proto::{EchoReply, EchoRequest, echo_server},
};

/// The generated tonic server around [`GrpcEcho`].
pub(crate) type Server = echo_server::EchoServer<GrpcEcho>;

pub(crate) fn server(shared: Arc<Shared>) -> Server {
    echo_server::EchoServer::new(GrpcEcho { shared })
}

/// Implementation of the `Echo` service.
#[derive(Debug)]
pub(crate) struct GrpcEcho {
    shared: Arc<Shared>,
}

type ReplyStream = BoxStream<'static, Result<EchoReply, Status>>;

// === impl GrpcEcho ===

#[tonic::async_trait]
impl echo_server::Echo for GrpcEcho {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let request = request.into_inner();
        self.shared.check(&request)?;
        Ok(self.shared.response(self.shared.reply(request.message, 0)))
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<ReplyStream>, Status> {
        let request = request.into_inner();
        self.shared.check(&request)?;
        let shared = self.shared.clone();
        let replies =
            (0..request.count).map(move |index| Ok(shared.reply(request.message.clone(), index)));
        let trailers = self.shared.trailers();
        let stream = stream::iter(replies).chain(stream::once(future::ready(Err(trailers))));
        Ok(self.shared.response(stream.boxed()))
    }

    async fn client_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        let mut requests = request.into_inner();
        let mut message = String::new();
        let mut count = 0u32;
        while let Some(request) = requests.message().await? {
            self.shared.check(&request)?;
            message.push_str(&request.message);
            count = count.saturating_add(1);
        }
        Ok(self.shared.response(self.shared.reply(message, count)))
    }

    type BidiStream = ReplyStream;

    async fn bidi(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let shared = self.shared.clone();
        // The state is `None` once the stream has ended with a status.
        let replies = stream::unfold(Some((request.into_inner(), 0u32)), move |state| {
            let shared = shared.clone();
            async move {
                let (mut requests, index) = state?;
                let item = match requests.message().await {
                    Ok(Some(request)) => match shared.check(&request) {
                        Ok(()) => {
                            let reply = shared.reply(request.message, index);
                            return Some((Ok(reply), Some((requests, index.saturating_add(1)))));
                        }
                        Err(status) => Err(status),
                    },
                    Ok(None) => Err(shared.trailers()),
                    Err(status) => Err(status),
                };
                Some((item, None))
            }
        });
        Ok(self.shared.response(replies.boxed()))
    }
}

// === impl Shared ===

impl Shared {
    /// Fails with the requested status when `fail_code` is not `OK`.
    /// Codes outside the gRPC range become `UNKNOWN`.
    fn check(&self, request: &EchoRequest) -> Result<(), Status> {
        match Code::from(request.fail_code) {
            Code::Ok => Ok(()),
            code => Err(Status::with_metadata(
                code,
                "requested failure",
                self.metadata(),
            )),
        }
    }

    fn reply(&self, message: String, index: u32) -> EchoReply {
        EchoReply {
            message,
            server: self.name.clone(),
            index,
        }
    }

    fn response<T>(&self, message: T) -> Response<T> {
        let mut response = Response::new(message);
        *response.metadata_mut() = self.metadata();
        response
    }

    /// The end of a successful stream. tonic turns a status yielded by a
    /// response stream into the trailers, metadata included; an `OK` status
    /// is its only way to send custom trailers without failing the call.
    fn trailers(&self) -> Status {
        Status::with_metadata(Code::Ok, "", self.metadata())
    }

    fn metadata(&self) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert(GRPC_SERVER_METADATA, self.name_metadata.clone());
        metadata
    }
}
