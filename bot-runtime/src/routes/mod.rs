pub mod chat;
pub mod conversations;
pub mod health;
pub mod notifications;
pub mod openai;
pub mod router;
pub mod web;
pub mod webhooks;
