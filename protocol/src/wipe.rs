//! [`Wipe`]: zeroize-on-drop for values whose crate cannot zeroize them itself.
//!
//! The one place in this crate with `unsafe` code (the crate root denies it elsewhere):
//! wiping a value's bytes after dropping it needs it held in a `MaybeUninit`, and
//! reading it back out of one is `unsafe`. The zeroize crate wipes `MaybeUninit`
//! storage but offers no safe owner of a value that is wiped on drop.
#![allow(unsafe_code)]

use core::mem::MaybeUninit;
use core::ops::{Deref, DerefMut};

use zeroize::Zeroize;

/// Owns a value and overwrites its bytes with zeros (volatile writes) after dropping it.
///
/// For RustCrypto objects built without their `zeroize` feature. Holding the value in a
/// `MaybeUninit` means the wiped bytes are never again read as a `T`, and `T`'s niches cannot
/// be used for an enclosing enum's discriminant.
pub(crate) struct Wipe<T>(MaybeUninit<T>);

impl<T> Wipe<T> {
    pub(crate) fn new(value: T) -> Self {
        Wipe(MaybeUninit::new(value))
    }
}

impl<T> Deref for Wipe<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: initialized in `new`, and only de-initialized in `drop`.
        unsafe { self.0.assume_init_ref() }
    }
}

impl<T> DerefMut for Wipe<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`.
        unsafe { self.0.assume_init_mut() }
    }
}

impl<T> Drop for Wipe<T> {
    fn drop(&mut self) {
        // SAFETY: the value is initialized (see `deref`) and is dropped exactly once, here;
        // afterwards its storage is only overwritten, never read.
        unsafe { self.0.assume_init_drop() };
        self.0.zeroize();
    }
}
