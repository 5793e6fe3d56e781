//! Number matching: at the scan, auth picks a two-digit code that only the
//! browser shows, and two decoys; the phone offers the three in random
//! order and its user must pick the one on the other screen. Someone who
//! relayed the QR code of their own browser to a victim's phone gets a pick
//! that the victim made without seeing the right number: one try, then the
//! session is DENIED.

use rand::seq::SliceRandom as _;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

/// The smallest and largest code: always two digits.
const LOW: u8 = 10;
const HIGH: u8 = 99;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matching {
    /// The code the browser shows.
    pub code: u8,
    /// The three numbers the phone offers, shuffled; one is `code`.
    pub choices: [u8; 3],
}

impl Matching {
    /// A code and two distinct decoys, uniform over 10..=99, from the
    /// thread's CSPRNG; the three in random order.
    pub fn random() -> Self {
        let mut rng = rand::rng();
        let code = rng.random_range(LOW..=HIGH);
        let mut choices = [code; 3];
        let mut i = 1;
        while i < 3 {
            let decoy = rng.random_range(LOW..=HIGH);
            if !choices[..i].contains(&decoy) {
                choices[i] = decoy;
                i += 1;
            }
        }
        choices.shuffle(&mut rng);
        Self { code, choices }
    }

    /// Whether `picked` is the code, in constant time (a timing difference
    /// would say nothing useful with one try, but costs nothing to avoid).
    pub fn is(&self, picked: u8) -> bool {
        use subtle::ConstantTimeEq as _;
        bool::from(self.code.ct_eq(&picked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_distinct_two_digit_choices_one_of_which_is_the_code() {
        let mut positions = [0usize; 3];
        for _ in 0..3000 {
            let m = Matching::random();
            assert!((LOW..=HIGH).contains(&m.code));
            assert!(m.choices.iter().all(|c| (LOW..=HIGH).contains(c)));
            assert_ne!(m.choices[0], m.choices[1]);
            assert_ne!(m.choices[1], m.choices[2]);
            assert_ne!(m.choices[0], m.choices[2]);
            let at = m.choices.iter().position(|&c| c == m.code).unwrap();
            positions[at] += 1;
            assert!(m.is(m.code));
            assert!(!m.is(m.choices[(at + 1) % 3]));
        }
        // The code is not always in the same place (each place ~1000 times).
        assert!(positions.iter().all(|&n| n > 800), "{positions:?}");
    }
}
