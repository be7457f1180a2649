//! Avatar image processing: the one image the server looks at. Everything else it stores is ciphertext.
//!
//! An uploaded avatar is decoded under hard limits (input bytes, pixel dimensions, decoder
//! allocation), so a decompression bomb fails fast instead of exhausting memory; then it is
//! re-encoded from pixels as PNG (which drops every metadata block: EXIF location, camera
//! serials, comments) at a fixed size, plus a thumbnail. Clients only ever get the server's
//! re-encoded bytes back.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{ImageFormat, ImageReader, Limits};

/// Limits for avatar processing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AvatarLimits {
    /// Largest accepted upload.
    pub max_input_bytes: usize,
    /// Largest accepted width or height of the decoded image.
    pub max_dimension: u32,
    /// Most memory the decoder may allocate.
    pub max_alloc_bytes: u64,
    /// Side of the stored (square) avatar.
    pub size: u32,
    /// Side of the stored thumbnail.
    pub thumbnail: u32,
}

impl Default for AvatarLimits {
    fn default() -> Self {
        Self {
            max_input_bytes: 256 * 1024,
            max_dimension: 4096,
            max_alloc_bytes: 64 * 1024 * 1024,
            size: 512,
            thumbnail: 96,
        }
    }
}

/// A re-encoded avatar.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Avatar {
    pub png: Vec<u8>,
    pub thumbnail_png: Vec<u8>,
}

impl std::fmt::Debug for Avatar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Avatar")
            .field("png_len", &self.png.len())
            .field("thumbnail_len", &self.thumbnail_png.len())
            .finish()
    }
}

/// Why an avatar was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum AvatarError {
    #[error("at most {max} bytes")]
    TooLarge { max: usize },
    #[error("not a PNG or JPEG image")]
    UnsupportedFormat,
    #[error("image exceeds {max}x{max} pixels or the decoder's memory limit")]
    LimitsExceeded { max: u32 },
    #[error("the image does not decode")]
    Undecodable,
    #[error("re-encoding failed")]
    Encode,
}

/// Decode `input` under `limits` and re-encode it. CPU-bound: call from a blocking task.
pub(crate) fn process(input: &[u8], limits: AvatarLimits) -> Result<Avatar, AvatarError> {
    if input.len() > limits.max_input_bytes {
        return Err(AvatarError::TooLarge {
            max: limits.max_input_bytes,
        });
    }
    let mut reader = ImageReader::new(Cursor::new(input))
        .with_guessed_format()
        .map_err(|_| AvatarError::UnsupportedFormat)?;
    if !matches!(reader.format(), Some(ImageFormat::Png | ImageFormat::Jpeg)) {
        return Err(AvatarError::UnsupportedFormat);
    }
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_dimension);
    decoder_limits.max_image_height = Some(limits.max_dimension);
    decoder_limits.max_alloc = Some(limits.max_alloc_bytes);
    reader.limits(decoder_limits);
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => AvatarError::LimitsExceeded {
            max: limits.max_dimension,
        },
        _ => AvatarError::Undecodable,
    })?;
    let full = image.resize_to_fill(limits.size, limits.size, FilterType::Triangle);
    let thumb = full.resize_to_fill(limits.thumbnail, limits.thumbnail, FilterType::Triangle);
    Ok(Avatar {
        png: png(&full)?,
        thumbnail_png: png(&thumb)?,
    })
}

fn png(image: &image::DynamicImage) -> Result<Vec<u8>, AvatarError> {
    let mut out = Cursor::new(Vec::new());
    image
        .to_rgba8()
        .write_to(&mut out, ImageFormat::Png)
        .map_err(|_| AvatarError::Encode)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use image::{ImageEncoder, RgbImage};

    use super::*;

    fn encoded(w: u32, h: u32, format: ImageFormat) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn re_encodes_to_fixed_sizes_without_the_original_bytes() {
        for format in [ImageFormat::Png, ImageFormat::Jpeg] {
            let input = encoded(300, 200, format);
            let a = process(&input, AvatarLimits::default()).unwrap();
            let full = image::load_from_memory(&a.png).unwrap();
            assert_eq!((full.width(), full.height()), (512, 512));
            let thumb = image::load_from_memory(&a.thumbnail_png).unwrap();
            assert_eq!((thumb.width(), thumb.height()), (96, 96));
            assert_ne!(a.png, input);
        }
    }

    #[test]
    fn refuses_bombs_oversize_and_garbage() {
        let limits = AvatarLimits::default();
        // A tiny, valid PNG header that declares a 100 000 x 100 000 image: the decoder must
        // refuse it from the header, before allocating.
        let mut bomb = Cursor::new(Vec::new());
        image::codecs::png::PngEncoder::new(&mut bomb)
            .write_image(&[0; 3 * 5000], 5000, 1, image::ExtendedColorType::Rgb8)
            .unwrap();
        let small = AvatarLimits {
            max_dimension: 4096,
            ..limits
        };
        assert!(matches!(
            process(bomb.get_ref(), small),
            Err(AvatarError::LimitsExceeded { .. })
        ));
        let big = vec![0u8; limits.max_input_bytes + 1];
        assert_eq!(
            process(&big, limits),
            Err(AvatarError::TooLarge {
                max: limits.max_input_bytes
            })
        );
        assert_eq!(
            process(b"GIF89a....", limits),
            Err(AvatarError::UnsupportedFormat)
        );
        let mut truncated = encoded(64, 64, ImageFormat::Png);
        truncated.truncate(truncated.len() / 2);
        assert_eq!(process(&truncated, limits), Err(AvatarError::Undecodable));
    }
}
