//! QR codes for a terminal: two module rows per text line with Unicode half blocks,
//! surrounded by a quiet zone. Used for the safety number's scannable form.

use qrcode::types::{Color, QrError};
use qrcode::QrCode;
use thiserror::Error;

/// Light modules around the code, on every side. The QR specification asks for 4; 2 is
/// what terminal renderers use in practice and phone scanners read it reliably.
pub const QUIET_ZONE: usize = 2;

/// Upper module painted, lower not.
const UPPER: char = '▀';
/// Lower module painted, upper not.
const LOWER: char = '▄';
/// Both modules painted.
const FULL: char = '█';
/// Neither module painted.
const EMPTY: char = ' ';

/// The terminal's background, which decides which modules are painted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Background {
    /// Light text on a dark background (the common terminal theme): light modules and
    /// the quiet zone are painted with blocks, dark modules are left as background.
    #[default]
    Dark,
    /// Dark text on a light background: dark modules are painted.
    Light,
}

/// The bytes do not fit in a QR code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot make a QR code: {0}")]
pub struct QrRenderError(#[from] pub QrError);

/// Renders `bytes` as a QR code for a dark-background terminal. See [`render_with`].
pub fn render(bytes: &[u8]) -> Result<String, QrRenderError> {
    render_with(bytes, Background::Dark)
}

/// Renders `bytes` (byte mode, error correction M) as lines of half blocks, each line
/// two module rows, with a [`QUIET_ZONE`] on every side. Lines are joined by `\n`,
/// without a trailing newline; every line has the same number of characters.
pub fn render_with(bytes: &[u8], background: Background) -> Result<String, QrRenderError> {
    let code = QrCode::new(bytes)?;
    let width = code.width();
    let colors = code.to_colors();
    let side = width + 2 * QUIET_ZONE;
    // True where a block is painted.
    let painted = |x: usize, y: usize| -> bool {
        let inside =
            (QUIET_ZONE..QUIET_ZONE + width).contains(&x) && (QUIET_ZONE..QUIET_ZONE + width).contains(&y);
        let color = if inside {
            colors
                .get((y - QUIET_ZONE) * width + (x - QUIET_ZONE))
                .copied()
                .unwrap_or(Color::Light)
        } else {
            Color::Light
        };
        match background {
            Background::Dark => color == Color::Light,
            Background::Light => color == Color::Dark,
        }
    };

    let lines = side.div_ceil(2);
    let mut out = String::with_capacity(lines * (side * 3 + 1));
    for line in 0..lines {
        if line > 0 {
            out.push('\n');
        }
        let (top, bottom) = (2 * line, 2 * line + 1);
        for x in 0..side {
            // A missing last row (odd side) is left unpainted.
            let lower = bottom < side && painted(x, bottom);
            out.push(match (painted(x, top), lower) {
                (true, true) => FULL,
                (true, false) => UPPER,
                (false, true) => LOWER,
                (false, false) => EMPTY,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use e2ee_protocol::safety_number::SafetyNumber;

    use super::*;

    fn check_shape(text: &str, modules: usize) {
        let side = modules + 2 * QUIET_ZONE;
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines.len(), side.div_ceil(2));
        for line in &lines {
            assert_eq!(line.chars().count(), side);
            assert!(
                line.chars().all(|c| [UPPER, LOWER, FULL, EMPTY].contains(&c)),
                "{line:?}"
            );
        }
    }

    #[test]
    fn renders_a_safety_number_with_quiet_zone() {
        let scannable = SafetyNumber::compute(&[1; 32], b"alice", &[2; 32], b"bob").scannable();
        assert_eq!(scannable.len(), 65);
        let modules = QrCode::new(&scannable).expect("fits").width();
        assert_eq!(modules, 37, "65 bytes at level M is a version 5 code");
        let text = render(&scannable).expect("render");
        check_shape(&text, modules);

        // On a dark background the quiet zone is painted: the first line (quiet rows
        // 0 and 1) is all full blocks, and every line starts and ends with painted
        // quiet-zone columns.
        let lines: Vec<&str> = text.split('\n').collect();
        assert!(lines[0].chars().all(|c| c == FULL));
        assert!(lines
            .iter()
            .all(|l| l.starts_with(FULL) && l.ends_with(FULL) || l.starts_with(UPPER)));
        // The last line holds quiet row 40 and nothing below it (side 41 is odd).
        assert!(lines[lines.len() - 1].chars().all(|c| c == UPPER));
        // The finder pattern's dark top edge sits on module row 2: unpainted.
        assert_eq!(lines[1].chars().nth(QUIET_ZONE), Some(EMPTY));
    }

    #[test]
    fn light_background_paints_the_dark_modules() {
        let text = render_with(b"e2ee", Background::Light).expect("render");
        let modules = QrCode::new(b"e2ee").expect("fits").width();
        check_shape(&text, modules);
        assert!(text
            .split('\n')
            .next()
            .is_some_and(|l| l.chars().all(|c| c == EMPTY)));
        // Inverting the background inverts every cell, except on the last line of an
        // odd-sized code, which has no lower module row in either rendering.
        let dark = render_with(b"e2ee", Background::Dark).expect("render");
        let (light_lines, dark_lines): (Vec<&str>, Vec<&str>) =
            (text.split('\n').collect(), dark.split('\n').collect());
        let last = light_lines.len() - 1;
        for (i, (l, d)) in light_lines.iter().zip(&dark_lines).enumerate() {
            for (a, b) in l.chars().zip(d.chars()) {
                let expected = match (i == last, a) {
                    (true, EMPTY) => UPPER,
                    (_, FULL) => EMPTY,
                    (_, EMPTY) => FULL,
                    (_, UPPER) => LOWER,
                    (_, other) => {
                        if other == LOWER {
                            UPPER
                        } else {
                            other
                        }
                    }
                };
                assert_eq!(b, expected, "line {i}");
            }
        }
    }

    #[test]
    fn rejects_data_too_long() {
        assert_eq!(render(&[0u8; 4000]), Err(QrRenderError(QrError::DataTooLong)));
    }
}
