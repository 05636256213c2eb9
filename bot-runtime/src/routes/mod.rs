pub mod chat;
pub mod health;
pub mod openai;
pub mod web;
