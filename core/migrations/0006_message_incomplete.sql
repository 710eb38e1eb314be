-- An answer the LLM backend cut short (killed, reset or timed out while streaming) is kept with
-- the text that reached the client and marked incomplete (api/chat_stream.py); it is shown as
-- interrupted and still replayed as history.
-- This file goes through str.format: literal braces are doubled.
ALTER TABLE messages ADD COLUMN incomplete boolean NOT NULL DEFAULT false;
