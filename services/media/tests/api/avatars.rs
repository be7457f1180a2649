//! Public avatars: re-encoded by the server, readable by any account, removed with the account.

use std::io::Cursor;

use guardyn_common::events::Payload as _;
use guardyn_common::events::auth::{ACCOUNT_DELETED, AccountDeleted};
use guardyn_common::{AccountId, DeviceId};
use guardyn_proto::guardyn::media::v1::{
    DeleteAvatarRequest, GetAvatarRequest, GetAvatarResponse, SetAvatarRequest,
};
use image::{ImageEncoder as _, ImageFormat, RgbImage};
use tonic::{Code, Status};

use crate::common::*;

fn picture(w: u32, h: u32, format: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 99]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A PNG whose header declares 20 000 x 20 000 pixels: a few bytes that would decode into
/// more than a gigabyte.
fn bomb() -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&[0; 3], 1, 1, image::ExtendedColorType::Rgb8)
        .unwrap();
    let mut png = out.into_inner();
    // IHDR width and height follow the 8-byte signature, the chunk length and the type.
    png[16..20].copy_from_slice(&20_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&20_000u32.to_be_bytes());
    // Keep the chunk valid (CRC over type and data), so only the limits can refuse it.
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

impl Env {
    async fn avatar_objects(&self) -> Vec<String> {
        let objects = self.server.stores().blob.list("avatars/").await.unwrap();
        objects.into_iter().map(|o| o.key).collect()
    }

    async fn set_avatar(&self, account: &str, image: Vec<u8>) -> Result<(), Status> {
        self.media()
            .set_avatar(authed(SetAvatarRequest { image }, &self.token(account)))
            .await
            .map(|_| ())
    }

    async fn get_avatar(
        &self,
        viewer: &str,
        account: &str,
        thumbnail: bool,
    ) -> Result<GetAvatarResponse, Status> {
        self.media()
            .get_avatar(authed(
                GetAvatarRequest {
                    account_id: account.to_owned(),
                    thumbnail,
                },
                &self.token(viewer),
            ))
            .await
            .map(tonic::Response::into_inner)
    }
}

#[tokio::test]
async fn an_avatar_is_re_encoded_and_readable_by_others() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    assert_eq!(
        code_reason(env.get_avatar(&b, &a, false).await),
        (Code::NotFound, "NOT_FOUND".into())
    );
    let original = picture(640, 480, ImageFormat::Jpeg);
    env.set_avatar(&a, original.clone()).await.unwrap();

    let full = env.get_avatar(&b, &a, false).await.unwrap();
    let img = image::load_from_memory_with_format(&full.png, ImageFormat::Png).unwrap();
    assert_eq!((img.width(), img.height()), (512, 512));
    assert_ne!(
        full.png, original,
        "the uploaded bytes are never served back"
    );
    let thumb = env.get_avatar(&b, &a, true).await.unwrap();
    let img = image::load_from_memory_with_format(&thumb.png, ImageFormat::Png).unwrap();
    assert_eq!((img.width(), img.height()), (96, 96));

    // Only the owner changes or removes it.
    env.media()
        .delete_avatar(authed(DeleteAvatarRequest {}, &env.token(&a)))
        .await
        .unwrap();
    assert_eq!(
        code_reason(env.get_avatar(&b, &a, false).await),
        (Code::NotFound, "NOT_FOUND".into())
    );
    assert!(env.avatar_objects().await.is_empty());
}

#[tokio::test]
async fn bombs_oversize_and_non_images_are_refused_and_nothing_is_stored() {
    let env = Env::start().await;
    let a = acct(1);
    for (image, reason) in [
        (bomb(), "INVALID_ARGUMENT"),
        (vec![0x47; 300 * 1024], "PAYLOAD_TOO_LARGE"),
        (
            b"GIF89a not an accepted format".to_vec(),
            "INVALID_ARGUMENT",
        ),
        (
            picture(64, 64, ImageFormat::Png)[..100].to_vec(),
            "INVALID_ARGUMENT",
        ),
    ] {
        let (code, got) = code_reason(env.set_avatar(&a, image).await);
        assert_eq!(code, Code::InvalidArgument);
        assert_eq!(got, reason);
    }
    assert!(env.avatar_objects().await.is_empty());
    assert_eq!(
        code_reason(env.get_avatar(&a, "not-an-account", false).await),
        (Code::InvalidArgument, "INVALID_ARGUMENT".into())
    );
}

#[tokio::test]
async fn account_deletion_removes_the_avatar() {
    let env = Env::start().await;
    let a = acct(1);
    env.set_avatar(&a, picture(100, 100, ImageFormat::Png))
        .await
        .unwrap();
    let event = AccountDeleted {
        account: AccountId::parse(&a).unwrap(),
        devices: vec![DeviceId::FIRST],
    };
    env.server
        .bus()
        .publish(ACCOUNT_DELETED, event.encode())
        .await
        .unwrap();
    assert_eq!(env.avatar_objects().await.len(), 2);
    env.eventually("the avatar removed", || async {
        env.avatar_objects().await.is_empty()
    })
    .await;
    assert_eq!(
        code_reason(env.get_avatar(&a, &a, false).await),
        (Code::NotFound, "NOT_FOUND".into())
    );
}
