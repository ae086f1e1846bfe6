// Calls the function `ev` with its own event and answers with what `ev` answered: the cost of a
// synchronous function-to-function call (context.invoke).
exports.handler = async (event, context) => context.invoke('ev', event);
