//! One HTTPS client per process, shared by the AWS SDK and the Qualtrics client.
//!
//! Building a TLS client sets up its trust store, which with the platform's store means
//! reading the CA bundle, and every file in `SSL_CERT_DIR` when it is set. With the SDK's own
//! HTTP client and reqwest side by side, a Qualtrics step did that twice at cold start, and
//! those reads were most of its start-up (`docs/benchmarks.md`). So the SDK sends its
//! requests through the same reqwest client instead: [`https_client_trusting`] builds a
//! step's once (and [`super::trust`] now spares it the read), [`SdkHttpClient`] adapts it
//! to the SDK's [`HttpClient`] trait, and [`sdk_defaults`] is `aws_config::defaults` wired
//! to it. The SDK still signs, retries and times out its calls; only the bytes on the wire
//! go through reqwest (hyper and rustls, trusting the roots `[tls]` names).
//!
//! What the SDK's own client did that this one does not: after a 5xx it marked the
//! connection so the retry opened a new one (its connection-poisoning interceptor needs a
//! handle only its hyper client attaches); here a retry may reuse the pooled connection.
//! And reqwest parses the URL, which removes `.` and `..` path segments that S3 keeps in a
//! key, so a request whose path has one is refused before it is sent (it would be signed
//! for one path and sent to another) with a user error the SDK does not retry.
//!
//! Redirects are never followed. An AWS service answers a redirect only to a request it
//! could not serve where it was sent (an S3 bucket in another region), and following it
//! would replay a request signed for the first host. Qualtrics documents none, and a
//! followed redirect would carry `X-API-TOKEN` to whatever host it named.

use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

use super::trust::{self, TrustError};
use crate::config::TlsConfig;

/// How long a connection may take to open: the AWS SDK's own default.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// Builds a tool's HTTPS client: rustls with the platform's trust store, HTTP/1.1,
/// connections pooled, redirects not followed, no proxy, [`CONNECT_TIMEOUT`] to connect.
///
/// `HTTPS_PROXY` and its kin are ignored, as the SDK's own client ignored them: an AWS call
/// from a VPC goes to its endpoints, not through an egress proxy, and a local run's calls to
/// loopback never leave the machine.
///
/// For tools on an engineer's machine (the xtask, the local stack), whose platform store
/// holds any corporate CA. A step builds its client with [`https_client_trusting`].
/// Build it once and clone it (a clone shares the pool and the trust store).
pub fn https_client() -> Result<reqwest::Client, reqwest::Error> {
    builder().build()
}

/// Builds a step's HTTPS client, trusting what `[tls]` says (by default Mozilla's roots,
/// compiled in; see [`super::trust`]), otherwise as [`https_client`]. Built once at cold
/// start, shared by the AWS SDK and the Qualtrics client.
pub fn https_client_trusting(tls: &TlsConfig) -> Result<reqwest::Client, TrustError> {
    trust::trusting(builder(), tls)?
        .build()
        .map_err(|e| TrustError::Client(e.into()))
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
}

/// `aws_config::defaults` at the latest behaviour version, sending through `http`.
pub fn sdk_defaults(http: &reqwest::Client) -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(SdkHttpClient::shared(http.clone()))
}

/// A reqwest client as the AWS SDK's HTTP client.
///
/// Every SDK client built from one [`aws_config::SdkConfig`] shares it, so they share one
/// connection pool. Of the SDK's connector settings, the read timeout (to the response's
/// headers) is applied per request; the connect timeout is the reqwest client's own
/// ([`CONNECT_TIMEOUT`] from [`https_client`]), which is also the SDK's default.
#[derive(Debug, Clone)]
pub struct SdkHttpClient {
    http: reqwest::Client,
}

impl SdkHttpClient {
    /// `http` as the SDK's HTTP client, for `aws_config::ConfigLoader::http_client`.
    pub fn shared(http: reqwest::Client) -> SharedHttpClient {
        SharedHttpClient::new(Self { http })
    }
}

impl HttpClient for SdkHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(Connector {
            http: self.http.clone(),
            read_timeout: settings.read_timeout(),
        })
    }
}

#[derive(Debug)]
struct Connector {
    http: reqwest::Client,
    read_timeout: Option<Duration>,
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let http = self.http.clone();
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let request = to_reqwest(request)?;
            let response = match read_timeout {
                Some(limit) => tokio::time::timeout(limit, http.execute(request))
                    .await
                    .map_err(|elapsed| ConnectorError::timeout(elapsed.into()))?,
                None => http.execute(request).await,
            }
            .map_err(connector_error)?;
            from_reqwest(response)
        })
    }
}

fn to_reqwest(request: HttpRequest) -> Result<reqwest::Request, ConnectorError> {
    if let Some(path) = dot_segment_path(request.uri()) {
        return Err(ConnectorError::user(
            format!(
                "the request path has a `.` or `..` segment, which the URL parser would remove \
                 after signing: rename the object ({path})"
            )
            .into(),
        ));
    }
    let request = request
        .try_into_http1x()
        .map_err(|e| ConnectorError::user(e.into()))?
        .map(reqwest::Body::wrap);
    reqwest::Request::try_from(request).map_err(|e| ConnectorError::user(e.into()))
}

/// The path of `uri` if one of its segments is `.` or `..`.
fn dot_segment_path(uri: &str) -> Option<&str> {
    let path = uri.split(['?', '#']).next().unwrap_or_default();
    // "scheme:", "", "host[:port]", then the path's segments.
    let mut segments = path.split('/').skip(3);
    segments
        .any(|segment| segment == "." || segment == "..")
        .then_some(path)
}

fn from_reqwest(response: reqwest::Response) -> Result<HttpResponse, ConnectorError> {
    let response = http::Response::<reqwest::Body>::from(response).map(SdkBody::from_body_1_x);
    HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
}

/// Classifies a failed exchange the way the SDK's retry strategy reads it, as its own client
/// did: timeouts and I/O failures are transient; a request reqwest could not build, or whose
/// body failed while it was sent (the caller's stream), is the caller's and not retried.
fn connector_error(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else if e.is_builder() || e.is_body() {
        ConnectorError::user(e.into())
    } else if trust::is_untrusted_issuer(&e) {
        ConnectorError::io(UntrustedIssuer(e).into())
    } else {
        ConnectorError::io(e.into())
    }
}

/// A transport error caused by a certificate from an untrusted issuer, saying what to
/// configure.
#[derive(Debug, thiserror::Error)]
#[error("{}", trust::UNTRUSTED_CERTIFICATE)]
pub struct UntrustedIssuer(#[source] pub reqwest::Error);

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{body_string, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    /// The SDK's defaults through the adapter, at `endpoint`, with fixed credentials.
    fn sdk(endpoint: String) -> aws_config::ConfigLoader {
        sdk_defaults(&https_client().unwrap())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("eu-west-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "key", "secret", None, None, "test",
            ))
    }

    async fn sqs(server: &MockServer) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&sdk(server.uri()).load().await)
    }

    #[tokio::test]
    async fn the_sdk_sends_and_reads_through_reqwest() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/"))
            .and(header("x-amz-target", "AmazonSQS.GetQueueUrl"))
            .and(body_string(r#"{"QueueName":"q"}"#))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_string(r#"{"QueueUrl":"http://example.test/1/q"}"#),
            )
            .expect(1)
            .mount(&server)
            .await;
        let url = sqs(&server)
            .await
            .get_queue_url()
            .queue_name("q")
            .send()
            .await;
        assert_eq!(url.unwrap().queue_url(), Some("http://example.test/1/q"));
        let requests = server.received_requests().await.unwrap();
        let auth = requests[0].headers.get("authorization").unwrap();
        assert!(
            auth.to_str().unwrap().starts_with("AWS4-HMAC-SHA256"),
            "signed: {auth:?}"
        );
    }

    #[tokio::test]
    async fn a_server_error_is_retried_by_the_sdk_and_a_redirect_is_not_followed() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(307).insert_header("location", "http://127.0.0.1:1/"),
            )
            .mount(&server)
            .await;
        let error = sqs(&server)
            .await
            .get_queue_url()
            .queue_name("q")
            .send()
            .await
            .unwrap_err();
        let status = error.raw_response().map(|r| r.status().as_u16());
        assert_eq!(status, Some(307), "{error:?}");
        // The 503, then the 307 (the SDK retries a 5xx, reqwest did not follow the 307).
        assert_eq!(server.received_requests().await.unwrap().len(), 2);
    }

    #[test]
    fn only_a_whole_dot_segment_is_refused() {
        for uri in ["http://h/b/./k", "http://h:1/b/../k?x=1", "http://h/b/k/.."] {
            assert!(dot_segment_path(uri).is_some(), "{uri}");
        }
        for uri in [
            "http://h/b/.k",
            "http://h/b/k..",
            "http://h/b/k?x=/../",
            "http://h/",
        ] {
            assert!(dot_segment_path(uri).is_none(), "{uri}");
        }
    }

    #[tokio::test]
    async fn an_object_key_with_a_dot_segment_is_refused_before_it_is_sent() {
        let server = MockServer::start().await;
        let sdk = sdk(server.uri()).load().await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        );
        let error = s3
            .get_object()
            .bucket("b")
            .key("landing/../x.csv")
            .send()
            .await
            .unwrap_err();
        match error {
            aws_sdk_s3::error::SdkError::DispatchFailure(failure) => {
                assert!(failure.is_user(), "{failure:?}")
            }
            other => panic!("expected a dispatch failure, got {other:?}"),
        }
        assert!(server.received_requests().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_transient_io_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let sdk = sdk(format!("http://{addr}"))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await;
        let error = aws_sdk_sqs::Client::new(&sdk)
            .get_queue_url()
            .queue_name("q")
            .send()
            .await
            .unwrap_err();
        match error {
            aws_sdk_sqs::error::SdkError::DispatchFailure(failure) => {
                assert!(failure.is_io(), "{failure:?}")
            }
            other => panic!("expected a dispatch failure, got {other:?}"),
        }
    }
}
