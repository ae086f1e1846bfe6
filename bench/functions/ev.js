// Answers when it started, so the bench can tell how long an event waited to run.
exports.handler = async () => ({ started: Date.now() });
