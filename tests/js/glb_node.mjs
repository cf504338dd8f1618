// three.js's GLTFLoader and AnimationMixer in Node (no browser): load a .glb, play its animation and print, as JSON,
// the named morph targets' influences at the given times. Images are not decoded (a stub bitmap stands in).
// Usage: node glb_node.mjs FILE.glb '[t, ...]' '["name", ...]'
import { readFileSync } from 'node:fs';
globalThis.self = globalThis;
globalThis.navigator ??= { userAgent: 'node' };
globalThis.createImageBitmap ??= async () => ({ width: 1, height: 1, close() {} });
const THREE = await import('three');
const { GLTFLoader } = await import('three/examples/jsm/loaders/GLTFLoader.js');
THREE.ImageBitmapLoader.prototype.load = function (url, onLoad) {
  setTimeout(() => onLoad({ width: 1, height: 1, close() {} }), 0);
  return {};
};
const [file, timesJson, namesJson] = process.argv.slice(2);
const data = readFileSync(file);
const buffer = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
const gltf = await new GLTFLoader().parseAsync(buffer, '');
let mesh = null;
gltf.scene.traverse(o => { if (o.isMesh) mesh = o; });
const mixer = new THREE.AnimationMixer(gltf.scene);
const action = mixer.clipAction(gltf.animations[0]);
action.setLoop(THREE.LoopOnce);
action.clampWhenFinished = true;
action.play();
const names = JSON.parse(namesJson);
const named = Object.fromEntries(names.map(n => [n, []]));
for (const t of JSON.parse(timesJson)) {
  mixer.setTime(t);
  for (const n of names) named[n].push(mesh.morphTargetInfluences[mesh.morphTargetDictionary[n]]);
}
console.log(JSON.stringify({ revision: THREE.REVISION, dictionary: Object.keys(mesh.morphTargetDictionary),
                             targets: mesh.geometry.morphAttributes.position.length, named }));
