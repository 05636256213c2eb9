pub mod chat;
pub mod conversations;
pub mod health;
pub mod notifications;
pub mod openai;
pub mod web;
pub mod webhooks;
