// The smallest Ember function: a top-level function named handler.
function handler(event) {
  return ['a', 'b', 'c'];
}
