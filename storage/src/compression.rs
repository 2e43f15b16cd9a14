//! gzip and zstd around a file's bytes: named by the file's extension (`.gz`, `.zst`) or
//! chosen by a step, undone while reading and applied while writing, as streams.

use std::io::{Read, Write};

/// How a file's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (`.gz`); a file of several gzip members reads as their concatenation.
    Gzip,
    /// Zstandard (`.zst`).
    Zstd,
}

impl Compression {
    /// The compression a file name's last extension names, and the name without it (whose
    /// extension then names the format: `orders.csv.gz` is gzip of `orders.csv`).
    pub fn of_name(name: &str) -> (Compression, &str) {
        let path = name.split(['?', '#']).next().unwrap_or(name);
        let Some((stem, ext)) = path.rsplit_once('.') else {
            return (Compression::None, path);
        };
        match ext.to_ascii_lowercase().as_str() {
            "gz" | "gzip" => (Compression::Gzip, stem),
            "zst" | "zstd" => (Compression::Zstd, stem),
            _ => (Compression::None, path),
        }
    }

    /// The usual extension (with its dot; empty for none).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }

    /// `input` with this compression undone.
    ///
    /// # Errors
    /// A zstd stream whose header cannot be read.
    pub fn decoder<'a>(
        self,
        input: impl std::io::BufRead + Send + 'a,
    ) -> std::io::Result<Box<dyn std::io::BufRead + Send + 'a>> {
        const BUF: usize = 256 * 1024;
        Ok(match self {
            Compression::None => Box::new(input),
            Compression::Gzip => Box::new(std::io::BufReader::with_capacity(
                BUF,
                flate2::bufread::MultiGzDecoder::new(input),
            )),
            Compression::Zstd => Box::new(std::io::BufReader::with_capacity(
                BUF,
                zstd::stream::read::Decoder::with_buffer(input)?,
            )),
        })
    }

    /// A writer that compresses into a buffer the caller empties as it goes
    /// ([`Encoder::take`]).
    ///
    /// # Errors
    /// zstd failing to start.
    pub fn encoder(self) -> std::io::Result<Encoder> {
        Ok(match self {
            Compression::None => Encoder::Plain(Vec::new()),
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::default(),
            )),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 3)?),
        })
    }
}

/// Bytes written, compressed into a buffer that is taken out in pieces (to be uploaded while
/// the rest is still being written).
pub enum Encoder {
    /// No compression.
    Plain(Vec<u8>),
    /// gzip.
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn buffer(&mut self) -> &mut Vec<u8> {
        match self {
            Encoder::Plain(v) => v,
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        }
    }

    /// How many compressed bytes wait in the buffer.
    pub fn pending(&mut self) -> usize {
        self.buffer().len()
    }

    /// The compressed bytes so far, leaving the buffer empty.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(self.buffer())
    }

    /// Ends the stream; returns the last compressed bytes.
    ///
    /// # Errors
    /// The compressor's.
    pub fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Plain(v) => Ok(v),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Encoder::Plain(v) => v.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads `input` to its end through `compression`'s decoder, for tests and checks.
///
/// # Errors
/// The decoder's.
pub fn decode_all(compression: Compression, input: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    compression.decoder(input)?.read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_round_trips() {
        assert_eq!(
            Compression::of_name("a/b.csv.gz"),
            (Compression::Gzip, "a/b.csv")
        );
        assert_eq!(
            Compression::of_name("b.JSONL.zst"),
            (Compression::Zstd, "b.JSONL")
        );
        assert_eq!(
            Compression::of_name("b.parquet"),
            (Compression::None, "b.parquet")
        );
        let text = "id,name\n1,Ada\n".repeat(1000);
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut e = c.encoder().expect("encoder");
            e.write_all(text.as_bytes()).expect("write");
            let mut bytes = e.take();
            bytes.extend(e.finish().expect("finish"));
            if c != Compression::None {
                assert!(bytes.len() < text.len() / 10, "{c:?} compresses");
            }
            assert_eq!(
                decode_all(c, &bytes).expect("decode"),
                text.as_bytes(),
                "{c:?}"
            );
        }
        // Two gzip members read as one stream (what `cat a.gz b.gz` makes).
        let mut two = Vec::new();
        for part in ["1,a\n", "2,b\n"] {
            let mut e = Compression::Gzip.encoder().expect("gz");
            e.write_all(part.as_bytes()).expect("write");
            two.extend(e.finish().expect("finish"));
        }
        assert_eq!(
            decode_all(Compression::Gzip, &two).expect("decode"),
            b"1,a\n2,b\n"
        );
    }
}
