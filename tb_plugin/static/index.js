export function render(){document.body.textContent="hello";}
