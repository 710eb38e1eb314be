-- Front-ends as multi-user clients (issue 14; README "Open WebUI as a multi-user front-end").
--  * a token marked `frontend` (hearth token create --frontend, the admin API) is trusted to say
--    which of its people a request is for (Open WebUI's X-OpenWebUI-User-* headers);
--  * each such person is a Hearth user of their own, found again by `external_id`:
--    `<the front-end token owner's user id>:<the person's id at the front-end>`;
--  * a stateless client's next turn (no conversation id, its history in `messages`) continues
--    the stored conversation that opened with the same question: `opening` is the SHA-256 of
--    the conversation's first user message.
-- This file goes through str.format: braces doubled.

ALTER TABLE tokens ADD COLUMN frontend boolean NOT NULL DEFAULT false;

ALTER TABLE users ADD COLUMN external_id text UNIQUE;

ALTER TABLE conversations ADD COLUMN opening bytea;
UPDATE conversations c SET opening = sha256(convert_to(m.content, 'UTF8'))
    FROM (SELECT DISTINCT ON (conversation_id) conversation_id, content
          FROM messages WHERE role = 'user' ORDER BY conversation_id, id) m
    WHERE m.conversation_id = c.id;
CREATE INDEX conversations_opening ON conversations (user_id, opening);
